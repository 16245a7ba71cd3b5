"""Where trials run: a local Ray runtime or a cluster; submission to Ray Jobs, SLURM, KubeRay."""
