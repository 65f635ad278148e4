"""Camera sources: one Protocol, three adapters (pymmcore-plus, pycromanager, simulated)."""

from ._protocol import CameraIdentity, Instrument, InstrumentError
from .mmcore import LightControl, MMCoreInstrument
from .pycromanager import PycromanagerInstrument
from .simulated import SimulatedInstrument

__all__ = [
    "CameraIdentity",
    "Instrument",
    "InstrumentError",
    "LightControl",
    "MMCoreInstrument",
    "PycromanagerInstrument",
    "SimulatedInstrument",
]
