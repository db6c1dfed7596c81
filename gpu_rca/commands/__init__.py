"""One module per verb; the dispatcher imports a verb's module only when that verb runs."""
