from .export import (
    EXPORT_MARKER,
    ExportMismatchError,
    check_report,
    export_checkpoint,
    export_state_dict,
    format_report,
    key_report,
    load_checkpoint_file,
)

__all__ = [
    "EXPORT_MARKER",
    "ExportMismatchError",
    "check_report",
    "export_checkpoint",
    "export_state_dict",
    "format_report",
    "key_report",
    "load_checkpoint_file",
]
