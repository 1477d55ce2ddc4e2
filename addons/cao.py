"""mitmproxy entry point: `mitmdump -s addons/cao.py` (started by `cao gateway start`).

mitmproxy loads `-s` scripts outside sys.modules, so all logic lives in the cao.addons package.
"""

import os
import sys

# mitmproxy puts this file's directory first on sys.path, where `cao` would name this very file
# instead of the package.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from cao.addons.bundle import make_addons  # noqa: E402

addons = make_addons()
