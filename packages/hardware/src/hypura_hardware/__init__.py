"""Hardware profile: compute devices, cgroup-aware RAM, storage and upload bandwidth."""
