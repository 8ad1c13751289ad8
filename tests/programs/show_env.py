"""Prints the OTEL_* and AIOTRACE_* variables the program sees."""

import json
import os

print(json.dumps({k: v for k, v in os.environ.items() if k.startswith(("OTEL_", "AIOTRACE_"))}))
