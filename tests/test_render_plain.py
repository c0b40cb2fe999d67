"""`render.plain` prints any text exactly, whatever Rich markup stands around it: every string of
up to five characters over the characters that matter to Rich's markup grammar."""

from __future__ import annotations

import io
import itertools

from rich.console import Console

from hvmove.cli.render import plain

CONTEXTS = ("{}", "x {} y", "[bold]{}[/]", "[bold]{} [/]")


def _render(markup: str) -> str:
    console = Console(file=io.StringIO(), width=500, emoji=False)
    console.print(markup, highlight=False, soft_wrap=True)
    return console.file.getvalue()[:-1]


def test_every_short_text_prints_exactly_in_every_context() -> None:
    wrong = []
    for n in range(1, 6):
        for chars in itertools.product("\\[]a/ ", repeat=n):
            text = "".join(chars)
            for ctx in CONTEXTS:
                want = ctx.replace("[bold]", "").replace("[/]", "").format(text)
                if _render(ctx.format(plain(text))) != want:
                    wrong.append((text, ctx))
    assert not wrong, wrong[:10]


def test_windows_paths_and_emoji_codes_print_as_written() -> None:
    for text in ("E:\\", "C:\\VMs\\[prod]\\", "\\\\fs01\\share\\[x", ":fire: vm", "[bold]x[/bold]"):
        assert _render(f"[bold]{plain(text)}[/]") == text
