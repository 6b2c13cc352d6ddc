"""The top of the house: pages that span apps, and the demo seed."""
