"""Running the expectation suites: one ephemeral GX context per process, reused."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recolab.adapters.ingest.expectations import Check, Spec, specs

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.core.validation_definition import ValidationDefinition
    from great_expectations.data_context.data_context.abstract_data_context import (
        AbstractDataContext,
    )
    from great_expectations.expectations.expectation import Expectation


@dataclass(frozen=True)
class Frame:
    """The frame handed to GX for one spec; ``rows[i]`` is the input position of its row i."""

    name: str
    frame: pd.DataFrame
    rows: np.ndarray | None = None


@dataclass
class Outcome:
    spec: Spec
    check: Check
    expectation: Expectation
    result: ExpectationValidationResult
    frame: Frame
    parameters: dict[str, Any]
    rerun: Callable[[Expectation, dict[str, Any]], dict[str, Any]]


class Suites:
    """An ephemeral GX context holding one validation definition per spec.

    Built once per process: creating the assets, suites and definitions costs more than
    validating 100k ratings. Runs are serialised by a lock, and the stored validation results
    are dropped after each run so that memory stays flat and Data Docs show one run.
    """

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            data_docs_sites={},
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        self.context: AbstractDataContext = gx.get_context(mode="ephemeral", project_config=config)
        self.lock = threading.Lock()
        source = self.context.data_sources.add_pandas("recolab")
        self.specs = {spec.name: spec for spec in specs()}
        self.definitions: dict[str, BatchDefinition[Any]] = {}
        self.validations: dict[str, ValidationDefinition] = {}
        self.checks: dict[str, dict[str, tuple[Check, Expectation]]] = {}
        for spec in self.specs.values():
            asset = source.add_dataframe_asset(spec.name)
            definition = asset.add_batch_definition_whole_dataframe("whole")
            suite = self.context.suites.add(gx.ExpectationSuite(name=spec.name))
            by_id = {}
            for check in spec.checks:
                expectation = suite.add_expectation(check.make())
                by_id[str(expectation.id)] = (check, expectation)
            self.definitions[spec.name] = definition
            self.checks[spec.name] = by_id
            self.validations[spec.name] = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=spec.name, data=definition, suite=suite)
            )

    @contextmanager
    def session(self) -> Iterator[Suites]:
        with self.lock:
            try:
                yield self
            finally:
                store = self.context.validation_results_store
                for key in store.list_keys():
                    store.remove_key(key)  # type: ignore[no-untyped-call]

    def run(
        self, frames: list[Frame], parameters: dict[str, Any], sample_size: int
    ) -> list[Outcome]:
        """Run each frame's suite with the BASIC result format, in the specs' check order."""
        result_format = {"result_format": "BASIC", "partial_unexpected_count": sample_size}
        outcomes: list[Outcome] = []
        for frame in frames:
            run = self.validations[frame.name].run(
                batch_parameters={"dataframe": frame.frame},
                expectation_parameters=parameters,
                result_format=result_format,
            )
            checks = self.checks[frame.name]
            order = list(checks)
            for result in sorted(run.results, key=lambda r: order.index(_expectation_id(r))):
                check, expectation = checks[_expectation_id(result)]
                outcomes.append(
                    Outcome(
                        spec=self.specs[frame.name],
                        check=check,
                        expectation=expectation,
                        result=result,
                        frame=frame,
                        parameters=parameters,
                        rerun=functools.partial(self._rerun, frame, parameters),
                    )
                )
        return outcomes

    def _rerun(
        self,
        frame: Frame,
        parameters: dict[str, Any],
        expectation: Expectation,
        result_format: dict[str, Any],
    ) -> dict[str, Any]:
        """Validate one expectation again, with a richer result format, on the same frame."""
        batch = self.definitions[frame.name].get_batch(batch_parameters={"dataframe": frame.frame})
        result = batch.validate(
            expectation, result_format=result_format, expectation_parameters=parameters
        )
        return dict(result.result)

    def build_data_docs(self, directory: Path) -> Path:
        """GX Data Docs of the current session's runs, written to ``directory``."""
        site = f"recolab-{uuid.uuid4().hex}"
        self.context.add_data_docs_site(
            site,
            {
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(directory),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        try:
            self.context.build_data_docs(site_names=[site])
        finally:
            self.context.delete_data_docs_site(site)
        return directory / "index.html"


def _expectation_id(result: ExpectationValidationResult) -> str:
    assert result.expectation_config is not None
    return str(result.expectation_config.id)


@functools.cache
def shared_suites() -> Suites:
    """The process's one Suites (built on first use)."""
    return Suites()
