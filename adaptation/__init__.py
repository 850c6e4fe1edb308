"""Scene-adaptive restoration, and the entry point every face calls.

The engine (core/) restores with a fixed network. This floor, above it (it needs the networks,
the losses and the cloud simulator, which core/ must not import), can first fine-tune a copy of
the network on the scene itself: its clear pixels pair the scene's own S1 with its own S2, the
same date, sensor geometry, land cover and season. `remove_clouds` here takes the same
`RemovalRequest`; without `adapt` it is exactly the engine's call, and torch is never imported.
"""
from .entry import remove_clouds

__all__ = ["remove_clouds"]
