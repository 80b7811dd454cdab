#!/usr/bin/env python3
"""Import every module of rasa_sparkcentral (found by walking the package, so a new or moved
module is covered) and print, as JSON, the modules and the DeprecationWarnings raised from
our own files. Exit 1 when there is one.

Run with each Rasa line's interpreter: tests/test_no_deprecations.py (Rasa Open Source) and
tests_pro/test_imports_pro.py (Rasa Pro) do.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
import warnings


def main() -> int:
    import rasa_sparkcentral

    package_dir = os.path.dirname(os.path.abspath(rasa_sparkcentral.__file__))
    modules = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        for info in pkgutil.walk_packages(rasa_sparkcentral.__path__, "rasa_sparkcentral."):
            if info.name.endswith(".__main__"):
                continue  # runs a command line when imported
            importlib.import_module(info.name)
            modules.append(info.name)
        # the lazily imported channel classes
        _ = rasa_sparkcentral.SparkcentralInput, rasa_sparkcentral.SparkcentralOutput
    ours = [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in records
        if issubclass(w.category, DeprecationWarning)
        and os.path.abspath(w.filename).startswith(package_dir + os.sep)
    ]
    print(json.dumps({"modules": modules, "ours": ours}))
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
