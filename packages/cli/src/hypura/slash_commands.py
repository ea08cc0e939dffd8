"""The chat's ``/`` commands (``/set``, ``/show``, ``/clear``, ``/load``, ``/save``, ``/?``, ``/bye``), with
``ollama run``'s wording: a part of `hypura.interactive.Chat`, which provides the model, the client, the
conversation's settings and the output streams."""
from __future__ import annotations

from typing import IO, Any

from .client import Client, ServerError
from .display import human_bytes, percent
from .interactive_help import PARAM_TYPES, usage, usage_parameters, usage_set, usage_shortcuts, usage_show


class SlashCommands:
    """What a line that starts with ``/`` does to the chat (`command`)."""

    client: Client
    model: str
    system: str | None
    options: dict[str, Any]
    format: str | None
    think: bool | None
    verbose: bool
    wordwrap: bool
    messages: list[dict[str, str]]
    out: IO[str]
    err: IO[str]

    def load(self) -> None:   # Chat's: loads the model
        raise NotImplementedError

    def _placement(self) -> dict[str, Any] | None:   # Chat's: the model's Hypura statistics from /api/ps
        raise NotImplementedError

    def _set_system(self, text: str) -> None:
        self.system = text
        self.out.write("Set system message.\n")

    def command(self, line: str) -> str | tuple[str, str] | None:
        """Run one ``/`` command; "bye" to leave, ("system", first line) when a multi-line system follows."""
        args = line.split()
        cmd = args[0]
        if cmd in ("/bye", "/exit"):
            return "bye"
        if cmd in ("/?", "/help"):
            topic = args[1].lstrip("/") if len(args) > 1 else ""
            {"set": usage_set, "show": usage_show, "shortcut": usage_shortcuts,
             "shortcuts": usage_shortcuts}.get(topic, usage)(self.err)
        elif cmd == "/clear":
            self.messages = []
            self.out.write("Cleared session context\n")
        elif cmd == "/set":
            return self._set(line, args)
        elif cmd == "/show":
            self._show(args)
        elif cmd == "/load":
            self._load(args)
        elif cmd == "/save":
            self._save(args)
        else:
            self.out.write(f"Unknown command '{cmd}'. Type /? for help\n")
        return None

    def _set(self, line: str, args: list[str]) -> tuple[str, str] | None:
        what = args[1] if len(args) > 1 else ""
        simple = {"verbose": ("verbose", True, "Set 'verbose' mode."), "quiet": ("verbose", False, "Set 'quiet' mode."),
                  "think": ("think", True, "Set 'think' mode."), "nothink": ("think", False, "Set 'nothink' mode."),
                  "noformat": ("format", None, "Disabled format."),
                  "wordwrap": ("wordwrap", True, "Set 'wordwrap' mode."),
                  "nowordwrap": ("wordwrap", False, "Set 'nowordwrap' mode.")}
        if what in simple:
            attr, value, message = simple[what]
            setattr(self, attr, value)
            self.out.write(message + "\n")
        elif what in ("history", "nohistory"):
            import readline

            readline.set_auto_history(what == "history")
        elif what == "format":
            if len(args) < 3 or args[2] != "json":
                self.out.write("Invalid or missing format. For 'json' mode use '/set format json'\n")
            else:
                self.format = "json"
                self.out.write("Set format to 'json' mode.\n")
        elif what == "parameter":
            if len(args) < 4:
                usage_parameters(self.err)
                return None
            try:
                self.options[args[2]] = parse_parameter(args[2], args[3:])
            except ValueError as exc:
                self.out.write(f'Couldn\'t set parameter: "{exc}"\n')
                return None
            self.out.write(f"Set parameter '{args[2]}' to '{', '.join(args[3:])}'\n")
        elif what == "system":
            text = line.split(None, 2)[2] if len(args) > 2 else ""
            if not text:
                usage_set(self.err)
            elif text.startswith('"""') and not (text.endswith('"""') and len(text) >= 6):
                return ("system", text[3:])
            else:
                self._set_system(text[3:-3] if text.startswith('"""') else text)
        else:
            if what:
                self.out.write(f"Unknown command '/set {what}'. Type /? for help\n")
            else:
                usage_set(self.err)
        return None

    def _show(self, args: list[str]) -> None:
        if len(args) < 2:
            usage_show(self.err)
            return
        from .commands.models import parameters_text, show_info

        info = self.client.request("POST", "/api/show", {"model": self.model})
        what = args[1]
        if what == "info":
            show_info(info, self.err)
            hy = self._placement()
            if hy:
                tiers = hy.get("tier_bytes") or {}
                rows = [f"    mode                {hy.get('mode')}"]
                rows += [f"    {t:<20}{human_bytes(tiers.get(t, 0))}" for t in ("gpu", "ram", "nvme")]
                if hy.get("last_eval_tps") is not None:
                    rows.append(f"    {'tok/s (last)':<20}{hy['last_eval_tps']:.1f}")
                if hy.get("expert_cache_hit_rate") is not None:
                    rows.append(f"    {'expert cache hits':<20}{percent(hy['expert_cache_hit_rate'])}")
                self.err.write("  Hypura\n" + "\n".join(rows) + "\n\n")
        elif what == "license":
            self.out.write((info.get("license") or "No license was specified for this model.") + "\n")
        elif what == "modelfile":
            self.out.write(str(info.get("modelfile", "")) + "\n")
        elif what == "parameters":
            params = parameters_text(info)
            self.out.write("Model defined parameters:\n" + ("\n".join(f"  {ln}" for ln in params.splitlines())
                           or "  No additional parameters were specified for this model.") + "\n\n")
            if self.options:
                self.out.write("User defined parameters:\n" + "".join(
                    f"  {k:<30} {v}\n" for k, v in self.options.items()) + "\n")
        elif what == "system":
            text = self.system or info.get("system")
            self.out.write(f"{text}\n\n" if text else "No system message was specified for this model.\n")
        elif what == "template":
            self.out.write((info.get("template") or "No prompt template was specified for this model.") + "\n")
        else:
            self.out.write(f"Unknown command '/show {what}'. Type /? for help\n")

    def _load(self, args: list[str]) -> None:
        if len(args) != 2:
            self.out.write("Usage:\n  /load <modelname>\n")
            return
        before = self.model
        self.model = args[1]
        self.out.write(f"Loading model '{self.model}'\n")
        try:
            self.load()
        except ServerError as exc:
            self.model = before
            self.out.write(f"Couldn't find model '{args[1]}'\n" if exc.status == 404 else f"error: {exc}\n")
            return
        self.messages = []

    def _save(self, args: list[str]) -> None:
        if len(args) != 2:
            self.out.write("Usage:\n  /save <modelname>\n")
            return
        body: dict[str, Any] = {"model": args[1], "from": self.model, "stream": False}
        if self.system:
            body["system"] = self.system
        if self.options:
            body["parameters"] = self.options
        try:
            self.client.request("POST", "/api/create", body)
        except ServerError as exc:
            self.out.write(f"error: {exc}\n")
            return
        self.out.write(f"Created new model '{args[1]}'\n")


def parse_parameter(name: str, values: list[str]) -> Any:
    """A ``/set parameter`` value in its option's type (``stop`` takes several); ValueError if it has none."""
    kind = PARAM_TYPES.get(name)
    if kind is None:
        raise ValueError(f"unknown parameter '{name}'")
    if kind is list:
        return list(values)
    try:
        return kind(values[0]) if kind is not bool else values[0].lower() in ("true", "1", "yes", "on")
    except ValueError:
        raise ValueError(f"invalid {kind.__name__} value [{values[0]}]") from None
