"""The ε gate: replicas, segmentation, measurements, ε and the verdict."""
