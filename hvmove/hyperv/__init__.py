"""The one way hvmove talks to a Hyper-V host: project PowerShell scripts over PSRP (pypsrp)."""
