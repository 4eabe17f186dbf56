"""Fabric deploy tasks: release layout, rolling upgrades, rollback."""
