"""The Processing face of the plugin: a provider with the `remove_clouds` algorithm.

Not named `processing`: a package of that name would shadow QGIS's own `processing` module.
"""
from .provider import SarCloudRemovalProvider

__all__ = ["SarCloudRemovalProvider"]
