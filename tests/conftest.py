"""Shared fixtures for all test suites."""
