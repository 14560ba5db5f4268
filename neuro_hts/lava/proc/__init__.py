"""Lava Processes and their ProcessModels (:mod:`.hts`).

Kept alone in this package on purpose: Lava's compiler looks for ProcessModels by
executing every module in the directory of a Process's module, so only the module that
defines the Processes lives here.
"""
