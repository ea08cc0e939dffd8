"""The chat's help texts (``/?``, ``/? set``, ``/? show``, ``/? shortcuts``, ``/set parameter``), worded as
``ollama run`` words them so that habits carry over, and the types of the parameters ``/set parameter`` takes."""
from __future__ import annotations

from typing import IO

# Ollama's option names and types (what /api/chat's `options` takes); Hypura uses the sampling ones, num_ctx
# and num_predict, and ignores the rest as Ollama ignores unknown keys
PARAM_TYPES: dict[str, type] = {
    "seed": int, "num_predict": int, "top_k": int, "top_p": float, "min_p": float, "num_ctx": int,
    "temperature": float, "repeat_penalty": float, "repeat_last_n": int, "presence_penalty": float,
    "frequency_penalty": float, "stop": list, "num_keep": int, "typical_p": float, "num_batch": int,
    "num_gpu": int, "num_thread": int, "penalize_newline": bool, "use_mmap": bool,
}


def usage(err: IO[str]) -> None:
    err.write("Available Commands:\n"
              "  /set            Set session variables\n"
              "  /show           Show model information\n"
              "  /load <model>   Load a session or model\n"
              "  /save <model>   Save your current session\n"
              "  /clear          Clear session context\n"
              "  /bye            Exit\n"
              "  /?, /help       Help for a command\n"
              "  /? shortcuts    Help for keyboard shortcuts\n"
              "\n"
              'Use """ to begin a multi-line message.\n'
              "\n")


def usage_set(err: IO[str]) -> None:
    err.write("Available Commands:\n"
              "  /set parameter ...     Set a parameter\n"
              "  /set system <string>   Set system message\n"
              "  /set history           Enable history\n"
              "  /set nohistory         Disable history\n"
              "  /set wordwrap          Enable wordwrap\n"
              "  /set nowordwrap        Disable wordwrap\n"
              "  /set format json       Enable JSON mode\n"
              "  /set noformat          Disable formatting\n"
              "  /set verbose           Show LLM stats\n"
              "  /set quiet             Disable LLM stats\n"
              "  /set think             Enable thinking\n"
              "  /set nothink           Disable thinking\n"
              "\n")


def usage_show(err: IO[str]) -> None:
    err.write("Available Commands:\n"
              "  /show info         Show details for this model\n"
              "  /show license      Show model license\n"
              "  /show modelfile    Show Modelfile for this model\n"
              "  /show parameters   Show parameters for this model\n"
              "  /show system       Show system message\n"
              "  /show template     Show prompt template\n"
              "\n")


def usage_shortcuts(err: IO[str]) -> None:
    err.write("Available keyboard shortcuts:\n"
              "  Ctrl + a            Move to the beginning of the line (Home)\n"
              "  Ctrl + e            Move to the end of the line (End)\n"
              "   Alt + b            Move back (left) one word\n"
              "   Alt + f            Move forward (right) one word\n"
              "  Ctrl + k            Delete the sentence after the cursor\n"
              "  Ctrl + u            Delete the sentence before the cursor\n"
              "  Ctrl + w            Delete the word before the cursor\n"
              "\n"
              "  Ctrl + l            Clear the screen\n"
              "  Ctrl + c            Stop the model from responding\n"
              "  Ctrl + d            Exit hypura (/bye)\n"
              "  Up / Down           Earlier messages of this session\n"
              "\n")


def usage_parameters(err: IO[str]) -> None:
    err.write("Available Parameters:\n"
              "  /set parameter seed <int>             Random number seed\n"
              "  /set parameter num_predict <int>      Max number of tokens to predict\n"
              "  /set parameter top_k <int>            Pick from top k num of tokens\n"
              "  /set parameter top_p <float>          Pick token based on sum of probabilities\n"
              "  /set parameter min_p <float>          Pick token based on top token probability * min_p\n"
              "  /set parameter num_ctx <int>          Set the context size\n"
              "  /set parameter temperature <float>    Set creativity level\n"
              "  /set parameter repeat_penalty <float> How strongly to penalize repetitions\n"
              "  /set parameter repeat_last_n <int>    Set how far back to look for repetitions\n"
              "  /set parameter stop <string> <string> ...   Set the stop parameters\n"
              "\n")
