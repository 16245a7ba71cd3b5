"""Search stages: the space, the stage runners (Ray Tune, or in process), results, narrowing."""
