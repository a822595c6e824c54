"""One error hierarchy: every error a user can fix derives from DiffmiaError, and the command line catches that one
type (printing its message on one line, exit code 2). Each subclass says what was wrong:

- ConfigError (core.config): a config file or `--set` value; UnknownNameError / PluginError (core.registry): a name
  no registry knows, a plugin that does not load.
- DataError / ManifestError (targets): images, captions, split files; ModelError (targets.denoiser): a model folder,
  its weights or an adapter; RunError (targets.runs): a run or results folder that is missing or unfinished;
  TrainingError (targets.train): a training that cannot go on.
- ScoreFileError, FeatureError, ReportError (evaluate): score files, feature networks, the report and its PDF.
- ExecutorError (diffmia.executor): a Slurm or local job that failed.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DiffmiaError(Exception):
    """Base of every error a user can fix; its message names the file, field or name at fault."""

    def __str__(self) -> str:  # KeyError subclasses would quote their argument: show the message as written
        return str(self.args[0]) if self.args else ""
