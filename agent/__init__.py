"""Edge agent: packages the newest Lookout for Vision model for this device's hardware
and deploys it to the device through AWS IoT Greengrass V2."""

__version__ = "0.1.0"
