"""What an experiment is: the whole contract, in one record.

An experiment is a package ``experiments/<name>/`` holding its ``config.toml`` (the protocol,
with profiles), ``run.py`` (what it does on the deployed lab) and ``report.py`` (what it makes
of a result folder), and an ``__init__.py`` whose ``EXPERIMENT`` fills in this record
(``experiment(__name__, summary, load=..., run=..., report=report)``: the rest follows from
the package). The registry (experiments/registry.py) lists every package once; the CLI
dispatches from it.

The life of a run is the same for every experiment:

1. ``load(config, profile)``: the validated config for a profile (experiments/config.py),
   stating the run's planned load time as ``planned_s`` or ``total_s`` (``python -m experiments
   list`` shows it for every profile);
2. ``run(config, options, finish)``: measure inside ``lab.session.session`` and return the
   result folder; the session calls ``finish`` after collecting host data;
3. ``finish``: ``analyse`` the folder once, mark the run complete with ``headline`` of that
   analysis, then ``write_report`` from the same analysis (the report shows the final status;
   a report that fails can be rebuilt). ``python -m experiments report`` runs ``analyse`` and
   ``write_report`` alone, from the folder alone.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from experiments.config import ConfigError, profiles_of, read
from experiments.reporting import Report
from experiments.results import open_run_folder

Analysis = dict[str, Any]  # every number a report shows, computed from the folder alone
Finish = Callable[[Path], Report]


@dataclasses.dataclass(frozen=True)
class Experiment:
    number: str                # `python -m experiments run <number>`
    name: str                  # the manifest's "experiment" and the result folder's label
    summary: str               # one line for `--help`
    config: Path               # its protocol TOML, beside its run module
    load: Callable[[Path, str | None], Any]
    run: Callable[[Any, Any, Finish], Path]
    analyse: Callable[[Path], Analysis]
    headline: Callable[[Analysis], dict[str, Any]]
    write_report: Callable[[Path, Analysis], Report]
    arrival_option: bool = False  # takes `--arrival` (its config has an `arrival` key)

    def profiles(self) -> list[str]:
        return profiles_of(read(self.config))

    def default_profile(self) -> str:
        """The profile a run without ``--profile`` uses (its config's ``default_profile``, read
        as experiments/config.py's ``resolve`` reads it)."""
        return read(self.config).get("default_profile", "full")

    def planned_s(self, profile: str | None) -> float | None:
        """Planned load time of a run of ``profile`` in seconds: the figure its run hands the
        session's progress line (``planned_s`` of experiments 1 and 2's configs, ``total_s`` of a
        protocol or a ladder). None when the config states none."""
        config = self.configure(profile)
        for name in ("planned_s", "total_s"):
            value = getattr(config, name, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        return None

    def configure(self, profile: str | None, arrival: str | None = None) -> Any:
        """The config for ``profile``, with ``--arrival`` applied where the experiment takes it."""
        config = self.load(self.config, profile)
        if arrival is None:
            return config
        if not self.arrival_option:
            raise ConfigError(f"--arrival {arrival}: experiment {self.number} sets its arrival "
                              f"patterns in {self.config}")
        return config.model_copy(update={"arrival": arrival})

    def execute(self, profile: str | None, options: Any, arrival: str | None = None) -> Path:
        return self.run(self.configure(profile, arrival), options, self.finish)

    def finish(self, folder: Path) -> Report:
        analysis = self.analyse(folder)
        run = open_run_folder(folder)
        run.complete(self.headline(analysis))
        if "manifest" in analysis:
            # the analysis read the manifest while the run was still incomplete: the report
            # must show the status and end time just recorded
            analysis = {**analysis, "manifest": run.manifest}
        return self.write_report(folder, analysis)

    def derived_headline(self, folder: Path) -> dict[str, Any]:
        """The headline this experiment's report code derives from the folder's raw data, as
        the manifest stores it (JSON, as RunFolder writes it): what a committed manifest's
        headline must equal. No report, plot or manifest is written."""
        return json.loads(json.dumps(self.headline(self.analyse(folder)), default=str))

    def rebuild(self, folder: Path) -> Report:
        """report.md, report.json and plots again, from the folder alone; a complete run's
        manifest takes the rebuilt headline."""
        analysis = self.analyse(folder)
        open_run_folder(folder).rebuilt(self.headline(analysis))
        return self.write_report(folder, analysis)


def experiment(package: str, summary: str, *, load: Callable[[Path, str | None], Any],
               run: Callable[[Any, Any, Finish], Path], report: ModuleType,
               arrival_option: bool = False) -> Experiment:
    """The record of the experiment package named ``package`` (``experiments.expN_<name>``,
    the caller's ``__name__``): its number and name from the package's name, its config.toml
    beside it, ``analyse``, ``headline`` and ``write_report`` from its report module."""
    found = re.fullmatch(r"experiments\.exp(\d+)_\w+", package)
    if found is None:
        raise ValueError(f"{package!r}: an experiment package is named experiments.expN_<name>")
    number = found.group(1)
    return Experiment(
        number=number, name=f"experiment-{number}", summary=summary,
        config=Path(sys.modules[package].__file__).with_name("config.toml"),
        load=load, run=run, analyse=report.analyse, headline=report.headline,
        write_report=report.write_report, arrival_option=arrival_option)
