"""The study's command center: figures and a diagnosis in words, read from the study folder."""
