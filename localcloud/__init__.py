"""A strict local AWS world for the edge agent: Lookout for Vision and Greengrass V2
cloud emulators, moto for S3/IoT/STS, and a simulated Greengrass core device.

Not shipped to devices. See localcloud/README.md for the conformance table.
"""
