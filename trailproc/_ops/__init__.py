"""Operating trailproc: metrics and health endpoints, `trailproc check`, generated references."""
