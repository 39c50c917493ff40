"""The rules of the validate stage (tasks.validate), one concept a module."""
