from django.apps import AppConfig


class MlflowGateConfig(AppConfig):
    name = "controlplane.mlflow_gate"
    label = "mlflow_gate"
    verbose_name = "MLflow gate"
