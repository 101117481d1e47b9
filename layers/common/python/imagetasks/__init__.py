"""imagetasks: Glance-compatible tasks on virtual machine images, on AWS."""

#: The service's release: the repository's VERSION file says the same (a unit test keeps them equal),
#: and GET /versions shows it beside Glance's API versions so a deployer knows what runs.
__version__ = "0.2.0"
