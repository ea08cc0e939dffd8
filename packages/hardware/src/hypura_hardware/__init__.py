"""Hardware profile: compute devices, cgroup-aware RAM, storage and upload bandwidth."""
from .devices import (cpu_cores, cpu_model, last_level_cache_bytes, list_compute_devices, measure_cpu_flops,
                      measure_ram_bandwidth, measure_upload_bps, primary_gpu)
from .dirs import default_models_dir, user_cache_dir, user_config_dir, user_data_dir
from .files import atomic_write, write_json_atomic
from .memory import CgroupLevel, cgroup_levels, peak_rss_bytes, ram_info, read_meminfo, rss_bytes
from .profile import (MAX_AGE, cache_path, fingerprint, load_or_measure, measure, read_cached, staleness,
                      write_cached)
from .storage import ReadPattern, default_patterns, measure_pattern, measure_storage, open_direct

__all__ = [
    "CgroupLevel", "MAX_AGE", "ReadPattern", "atomic_write", "cache_path", "cgroup_levels", "cpu_cores", "cpu_model",
    "default_models_dir", "default_patterns", "fingerprint", "last_level_cache_bytes", "list_compute_devices",
    "load_or_measure",
    "measure", "measure_cpu_flops", "measure_pattern", "measure_ram_bandwidth", "measure_storage",
    "measure_upload_bps", "open_direct", "peak_rss_bytes", "primary_gpu", "ram_info", "rss_bytes", "read_cached", "read_meminfo",
    "staleness", "user_cache_dir", "user_config_dir", "user_data_dir", "write_cached", "write_json_atomic",
]
