"""The lab's WS-Management endpoint: a fake WinRM listener that unmodified pypsrp can talk to.

Only the transport lives here: HTTP(S) listeners, Basic auth and Negotiate (NTLM through
pyspnego's acceptor, with WinRM message encryption over HTTP and channel binding over HTTPS, as a
Windows listener does), the six WS-Man operations pypsrp
uses for PowerShell Remoting (Create, Command, Send, Receive, Signal, Delete, plus Get for
``RunspacePool.is_alive()``), fault injection, and host kill/revive. All MS-PSRP decoding and
encoding is delegated to psrpcore's server classes, which are an implementation independent of
pypsrp's own serializer. What a "script" does is decided by a handler callable supplied by the
caller; the handler runs in one worker thread per pipeline.

Pinned to psrpcore 0.3.x: a terminating error needs the private ``ServerPipeline._change_state``.
Several choices below (one write per reply, cutting keep-alive sockets on kill, long-polling
Receive) come from measuring pypsrp 0.9.1 against such a fake; each is commented where it is made.

The package: ``endpoint`` (hosts and the WS-Man operations), ``protocol`` (envelopes, faults,
PSRP shell state, the handler's types), ``server`` (HTTP), ``logon`` (NTLM, channel binding),
``sealing`` (message encryption), ``faults`` (injected transport faults).
"""

from hvmove.lab.wsman.endpoint import WSManEndpoint
from hvmove.lab.wsman.faults import FaultQueue
from hvmove.lab.wsman.protocol import ControlHandler, Handler, Invocation, ScriptFailed

__all__ = [
    "ControlHandler",
    "FaultQueue",
    "Handler",
    "Invocation",
    "ScriptFailed",
    "WSManEndpoint",
]
