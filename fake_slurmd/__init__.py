"""A simulated compute node: a callerid responder and slurmstepd sockets that real Slurm clients accept."""

from fake_slurmd.controller import FakeSlurmd, FakeStepds, JobConnection
from fake_slurmd.scenario import Job, NodeSpec, Scenario, ScenarioError

__all__ = ["FakeSlurmd", "FakeStepds", "Job", "JobConnection", "NodeSpec", "Scenario", "ScenarioError"]
