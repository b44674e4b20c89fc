"""Built-in Temu + Orange Connex simulator (demo, integration tests, benchmark).

Written from the specs alone: it shares no code with ``engine.temu`` or ``engine.oc``, so a
misreading on one side is caught by the other.

Hostile modes beyond network faults, all off by default: engine/sim/modes.py (issue 14:
foreign OC RMAs, pick-up cases and mode-mismatch refusal, lost upload answers with a lagging
returns list, empty carrier lists); engine/sim/tokens.py (per-shop token expiry and scopes,
``bg.open.accesstoken.info.get``); engine/sim/attempts.py (every write attempt and its outcome).
"""

from engine.sim.config import SimApp, SimConfig, SimShop
from engine.sim.server import Simulator, serve_forever

__all__ = ["SimApp", "SimConfig", "SimShop", "Simulator", "serve_forever"]
