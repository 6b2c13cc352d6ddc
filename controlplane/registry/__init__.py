"""Registry: model versions registered from jobs, promotion requests, approvals and deployments."""
