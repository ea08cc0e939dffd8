"""GGUF inspection and the tier placement planner (pure Python: imports no native code)."""
from .gguf_file import GGUFError, GGUFHeader, RawTensor, read_header
from .gguf_validate import validate_gguf
from .hardware_spec import PRESETS, GPUSpec, HardwareSpec, load_hardware
from .model_info import ModelInfo, TensorInfo, inspect_model, model_info_from_header
from .plan import PLAN_MODES, TIERS, Plan, PlanError
from .planner import default_budgets, estimate_overhead, plan_placement
from .roles import ADAPTERS, ROLES, tensor_role
from .sizes import SIZE_HELP, format_size, parse_size

__all__ = [
    "ADAPTERS", "GGUFError", "GGUFHeader", "GPUSpec", "HardwareSpec", "ModelInfo", "PLAN_MODES", "PRESETS", "Plan",
    "PlanError", "ROLES", "RawTensor", "SIZE_HELP", "TIERS", "TensorInfo", "default_budgets",
    "estimate_overhead", "format_size", "inspect_model", "load_hardware", "model_info_from_header",
    "parse_size", "plan_placement", "read_header", "tensor_role", "validate_gguf",
]
