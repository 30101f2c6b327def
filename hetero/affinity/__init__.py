"""Affinity: which device runs each node of a HETERO model, and why (DESIGN.md §5.1).

Device-agnostic: takes the graph plus plain mappings (each device's ``query`` answer, the priority
list, manual affinities, rules, optional cost estimates) and returns a frozen :class:`Assignment`.
"""
from .assign import POLICIES, UNSUPPORTED, Assignment, assign
from .cost import CostBreakdown, Costs, DeviceProfile, binary_cut, estimate_costs, flows, node_work, optimise, \
    regions, total_cost
from .rules import Rule, first_match, parse_rules

__all__ = ["assign", "Assignment", "UNSUPPORTED", "POLICIES", "Rule", "parse_rules", "first_match", "Costs",
           "CostBreakdown", "DeviceProfile", "estimate_costs", "total_cost", "optimise", "binary_cut", "flows",
           "regions", "node_work"]
