"""Offline replay of the decision core: the admin's what-if tool and the source of benchmark numbers."""
