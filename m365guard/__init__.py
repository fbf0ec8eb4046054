"""m365guard: checks a school's Microsoft 365 tenant against its staff Acceptable Use Policy."""

__version__ = "0.1.0"
