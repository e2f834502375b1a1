"""The controls design: `config`, `run`, `results`, `report` (see `pdjax.designs`)."""

from pdjax.designs.controls import config, report, results, run
from pdjax.designs.controls.config import ARMS, CONTRASTS, SEQUENCES, ControlsConfig
from pdjax.designs.controls.results import ControlsResult, Student, TeacherArm
from pdjax.designs.controls.run import load_parts, pool, run_controls, teacher_owners

__all__ = ["config", "report", "results", "run", "ARMS", "CONTRASTS", "SEQUENCES", "ControlsConfig",
           "ControlsResult", "Student", "TeacherArm", "load_parts", "pool", "run_controls",
           "teacher_owners"]
