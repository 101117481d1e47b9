"""An OpenStackClient plugin for imagetasks: the tasks' progress and error codes, watched live."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("imagetasks-client")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
