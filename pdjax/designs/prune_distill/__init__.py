"""The prune-then-distill design: `config`, `run`, `results`, `report` (see `pdjax.designs`)."""

from pdjax.designs.prune_distill import config, report, results, run
from pdjax.designs.prune_distill.config import (STUDENT_ARMS, ExperimentConfig, Family, ResNetConfig, StudentSpec,
                                                TwoFamilyConfig)
from pdjax.designs.prune_distill.results import PipelineResult, StudentRow, TeacherResult, TeacherRound
from pdjax.designs.prune_distill.run import prune_then_distill, run_families

__all__ = ["config", "report", "results", "run", "STUDENT_ARMS", "ExperimentConfig", "Family", "ResNetConfig",
           "StudentSpec", "TwoFamilyConfig", "PipelineResult", "StudentRow", "TeacherResult", "TeacherRound",
           "prune_then_distill", "run_families"]
