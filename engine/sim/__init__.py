"""Built-in Temu + Orange Connex simulator (demo, integration tests, benchmark).

Written from the specs alone: it shares no code with ``engine.temu`` or ``engine.oc``, so a
misreading on one side is caught by the other.
"""

from engine.sim.config import SimApp, SimConfig, SimShop
from engine.sim.server import Simulator, serve_forever

__all__ = ["SimApp", "SimConfig", "SimShop", "Simulator", "serve_forever"]
