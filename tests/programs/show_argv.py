"""Prints what a program sees of how it was started, to compare traced and untraced."""

import json
import os
import sys

print(
    json.dumps(
        {
            "argv": sys.argv,
            "name": __name__,
            "file": os.path.abspath(__file__),
            "path0": sys.path[0],
            "spec": None if __spec__ is None else __spec__.name,
            "main_file": getattr(sys.modules["__main__"], "__file__", None),
        }
    )
)
sys.stderr.write("to stderr\n")
