package fakekubelet

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestBehaviourOf(t *testing.T) {
	cases := map[string]containerBehaviour{
		"nginx:1.27":                           behaveRunning,
		"unreachable.invalid/app:1.0":          behavePullFailure,
		"unreachable.invalid:5000/app":         behavePullFailure,
		"docker.io/unreachable.invalid:1.0":    behaveRunning,
		"busybox:crashloop":                    behaveCrashLoop,
		"registry:5000/busybox:crashloop":      behaveCrashLoop,
		"registry:5000/crashloop":              behaveRunning,
		"busybox:crashloop@sha256:0123456789a": behaveCrashLoop,
	}
	for image, want := range cases {
		if got := behaviourOf(image); got != want {
			t.Errorf("behaviourOf(%q) = %v, want %v", image, got, want)
		}
	}
}

func TestCrashLoopBacksOffLongerEachTime(t *testing.T) {
	start := time.Unix(1000, 0)
	steps := []struct {
		after    time.Duration
		running  bool
		restarts int32
	}{
		{0, true, 0},
		{1500 * time.Millisecond, false, 1}, // crashed at 1 s, backs off 1 s
		{2500 * time.Millisecond, true, 1},  // restarted at 2 s
		{3500 * time.Millisecond, false, 2}, // crashed at 3 s, backs off 2 s
		{5500 * time.Millisecond, true, 2},  // restarted at 5 s
		{6500 * time.Millisecond, false, 3}, // crashed at 6 s, backs off 4 s
		{9500 * time.Millisecond, false, 3},
		{10500 * time.Millisecond, true, 3},
	}
	for _, step := range steps {
		got := crashLoopAt(start, start.Add(step.after))
		if got.running != step.running || got.restarts != step.restarts {
			t.Errorf("at +%v: running=%v restarts=%d, want running=%v restarts=%d",
				step.after, got.running, got.restarts, step.running, step.restarts)
		}
		if !got.nextChange.After(start.Add(step.after)) {
			t.Errorf("at +%v: next change %v is not in the future", step.after, got.nextChange)
		}
	}
}

func pod(image string, owner string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyAlways,
			Containers:    []corev1.Container{{Name: "main", Image: image}},
		},
	}
	if owner == "Job" {
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: "j", UID: "j1"}}
	}
	return p
}

func conditionOf(status corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

func TestDesiredStatus(t *testing.T) {
	now := time.Unix(2000, 0)
	status, next := desiredStatus(pod("nginx:1.27", ""), "10.244.0.2", "127.0.0.1", now)
	if status.Phase != corev1.PodRunning || conditionOf(status, corev1.PodReady) != corev1.ConditionTrue || !next.IsZero() {
		t.Errorf("running pod: phase %s, ready %s, next %v", status.Phase, conditionOf(status, corev1.PodReady), next)
	}
	if status.PodIP != "10.244.0.2" || status.HostIP != "127.0.0.1" || !status.ContainerStatuses[0].Ready {
		t.Errorf("running pod: addresses or container status wrong: %+v", status)
	}

	p := pod("unreachable.invalid/app:1", "")
	status, _ = desiredStatus(p, "10.244.0.3", "127.0.0.1", now)
	if status.Phase != corev1.PodPending || status.ContainerStatuses[0].State.Waiting.Reason != "ErrImagePull" {
		t.Errorf("pull failure at start: %+v", status)
	}
	p.Status = status
	status, next = desiredStatus(p, "10.244.0.3", "127.0.0.1", now.Add(3*time.Second))
	if status.ContainerStatuses[0].State.Waiting.Reason != "ImagePullBackOff" || !next.IsZero() {
		t.Errorf("pull failure later: %+v next %v", status.ContainerStatuses[0].State, next)
	}
	if conditionOf(status, corev1.PodReady) != corev1.ConditionFalse {
		t.Errorf("pull failure must not be Ready")
	}

	job := pod("busybox:1.36", "Job")
	status, next = desiredStatus(job, "10.244.0.4", "127.0.0.1", now)
	if status.Phase != corev1.PodRunning || next.IsZero() {
		t.Errorf("job pod at start: phase %s next %v", status.Phase, next)
	}
	job.Status = status
	status, _ = desiredStatus(job, "10.244.0.4", "127.0.0.1", now.Add(2*time.Second))
	if status.Phase != corev1.PodSucceeded || status.ContainerStatuses[0].State.Terminated.Reason != "Completed" {
		t.Errorf("job pod later: %+v", status)
	}
}

func TestStatusIsStableAcrossTheRoundTrip(t *testing.T) {
	p := pod("nginx:1.27", "")
	first, _ := desiredStatus(p, "10.244.0.2", "127.0.0.1", time.Now())
	p.Status = first
	second, _ := desiredStatus(p, "10.244.0.2", "127.0.0.1", time.Now().Add(time.Minute))
	if !statusEqual(first, second) {
		t.Errorf("a running pod's status changed with time alone:\n%+v\n%+v", first, second)
	}
}
