"""KubernetesPodOperator with one fix for cncf-kubernetes 10.25, found by this project's tests.

When a deferrable task reattaches to a pod whose container has already finished (say the
worker was replaced while a long GPU job ran), the provider skips deferring and calls
``trigger_reentry`` directly, but drops its return value, so the pod's XCom is lost and the
downstream task fails. This subclass keeps that value. Drop it once the provider returns it
(the template's test ``test_upstream_reattach_to_a_finished_pod_drops_the_xcom`` says when).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator


class RemotePodOperator(KubernetesPodOperator):
    def execute(self, context) -> Any:
        self._finished_result = None
        result = super().execute(context)
        return self._finished_result if self.deferrable else result

    def trigger_reentry(self, context, event: dict[str, Any]) -> Any:
        self._finished_result = super().trigger_reentry(context, event)
        return self._finished_result
