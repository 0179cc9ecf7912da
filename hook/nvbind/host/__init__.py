"""Host inventory: what the machine has to give (see build())."""
