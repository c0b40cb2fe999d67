"""hvmove: orchestrate Hyper-V storage live migration (Move-VMStorage) safely, many VMs a night."""

__version__ = "0.1.0"
