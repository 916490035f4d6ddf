"""The Update service (issue 14). So far its device-facing side: the OAP
interface devices use (:mod:`.device_interface`) and its provider
(:mod:`.device_provider`)."""
