"""Driver capability names (NVIDIA_DRIVER_CAPABILITIES), kept apart so that reading a
request does not import the library discovery code."""

CAPABILITIES = ("compute", "compat32", "display", "graphics", "ngx", "utility", "video")
DEFAULT_CAPABILITIES = ("compute", "utility")
