"""The embedded lab: a small Hyper-V estate reached over WinRM on 127.0.0.1."""
