package fakekubelet

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Images that simulate failure, so health checks and auto-revert can be tested.
const (
	unreachableRegistry = "unreachable.invalid"
	crashLoopTag        = "crashloop"
)

// Timings of the simulated container lifecycle. A real kubelet's crash back-off
// starts at 10 s and caps at 5 min; these are compressed so tests stay short.
const (
	pullFailureBeforeBackOff = 2 * time.Second
	crashAfterRunning        = 1 * time.Second
	crashBackOffCap          = 16 * time.Second
	jobRunTime               = 1 * time.Second
)

type containerBehaviour int

const (
	behaveRunning containerBehaviour = iota
	behavePullFailure
	behaveCrashLoop
)

// behaviourOf tells from an image reference how its container behaves.
func behaviourOf(image string) containerBehaviour {
	host := strings.SplitN(image, "/", 2)[0]
	if strings.Contains(image, "/") && strings.Split(host, ":")[0] == unreachableRegistry {
		return behavePullFailure
	}
	ref := image
	if at := strings.Index(ref, "@"); at >= 0 {
		ref = ref[:at]
	}
	lastSlash := strings.LastIndex(ref, "/")
	if colon := strings.LastIndex(ref, ":"); colon > lastSlash && ref[colon+1:] == crashLoopTag {
		return behaveCrashLoop
	}
	return behaveRunning
}

// crashLoopState is where a crash-looping container is at a moment: the cycle is
// run for crashAfterRunning, crash, back off 1 s, 2 s, 4 s ... up to the cap, run again.
type crashLoopState struct {
	running      bool
	restarts     int32
	since        time.Time // when the current state began
	nextChange   time.Time
	lastFinished time.Time // when the last run ended (zero before the first crash)
}

func crashLoopAt(start, now time.Time) crashLoopState {
	t := start
	var restarts int32
	var lastFinished time.Time
	for {
		crash := t.Add(crashAfterRunning)
		if now.Before(crash) {
			return crashLoopState{running: true, restarts: restarts, since: t, nextChange: crash, lastFinished: lastFinished}
		}
		backOff := min(time.Second<<min(restarts, 10), crashBackOffCap)
		restartAt := crash.Add(backOff)
		if now.Before(restartAt) {
			return crashLoopState{running: false, restarts: restarts + 1, since: crash, nextChange: restartAt, lastFinished: crash}
		}
		restarts++
		lastFinished = crash
		t = restartAt
	}
}

// desiredStatus computes the status a node would report for pod at now, and when
// the status will next change by itself (zero if never).
func desiredStatus(pod *corev1.Pod, podIP, hostIP string, now time.Time) (corev1.PodStatus, time.Time) {
	status := *pod.Status.DeepCopy()
	// Whole seconds: that is what the API server stores, so a status computed
	// twice for the same moment compares equal after the round trip.
	start := now.Truncate(time.Second)
	if status.StartTime != nil {
		start = status.StartTime.Time
	} else {
		status.StartTime = &metav1.Time{Time: start}
	}
	status.HostIP = hostIP
	status.HostIPs = []corev1.HostIP{{IP: hostIP}}
	status.PodIP = podIP
	status.PodIPs = []corev1.PodIP{{IP: podIP}}

	status.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		cs := baseContainerStatus(pod, c)
		cs.Ready = true
		cs.State.Terminated = &corev1.ContainerStateTerminated{
			Reason: "Completed", StartedAt: metav1.NewTime(start), FinishedAt: metav1.NewTime(start),
			ContainerID: cs.ContainerID,
		}
		status.InitContainerStatuses = append(status.InitContainerStatuses, cs)
	}

	var next time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	isJob := ownedByJob(pod)
	allReady, anyPending, anyFailed, allSucceeded := true, false, false, true
	status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		cs := baseContainerStatus(pod, c)
		switch behaviourOf(c.Image) {
		case behavePullFailure:
			reason, message := "ErrImagePull", fmt.Sprintf("failed to pull image %q: dial tcp: lookup %s: no such host", c.Image, unreachableRegistry)
			if now.Sub(start) >= pullFailureBeforeBackOff {
				reason, message = "ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q", c.Image)
			} else {
				earliest(start.Add(pullFailureBeforeBackOff))
			}
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: message}
			allReady, anyPending, allSucceeded = false, true, false
		case behaveCrashLoop:
			state := crashLoopAt(start, now)
			if isJob && pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
				if state.running && state.restarts == 0 {
					cs.Started = ptr(true)
					cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(start)}
					earliest(state.nextChange)
				} else {
					cs.State.Terminated = terminatedError(cs.ContainerID, start, start.Add(crashAfterRunning))
					anyFailed = true
				}
				allReady, allSucceeded = false, false
				break
			}
			cs.RestartCount = state.restarts
			if !state.lastFinished.IsZero() {
				cs.LastTerminationState.Terminated = terminatedError(cs.ContainerID, state.lastFinished.Add(-crashAfterRunning), state.lastFinished)
			}
			if state.running {
				cs.Started = ptr(true)
				cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(state.since)}
			} else {
				cs.State.Waiting = &corev1.ContainerStateWaiting{
					Reason:  "CrashLoopBackOff",
					Message: fmt.Sprintf("back-off restarting failed container %s in pod %s_%s", c.Name, pod.Name, pod.Namespace),
				}
			}
			earliest(state.nextChange)
			allReady, allSucceeded = false, false
		default:
			if isJob {
				done := start.Add(jobRunTime)
				if now.Before(done) {
					cs.Started = ptr(true)
					cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(start)}
					earliest(done)
					allSucceeded = false
				} else {
					cs.State.Terminated = &corev1.ContainerStateTerminated{
						Reason: "Completed", StartedAt: metav1.NewTime(start), FinishedAt: metav1.NewTime(done),
						ContainerID: cs.ContainerID,
					}
				}
				allReady = false
				break
			}
			cs.Ready, cs.Started = true, ptr(true)
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(start)}
			allSucceeded = false
		}
		status.ContainerStatuses = append(status.ContainerStatuses, cs)
	}

	switch {
	case anyPending:
		status.Phase = corev1.PodPending
	case anyFailed:
		status.Phase = corev1.PodFailed
	case isJob && allSucceeded:
		status.Phase = corev1.PodSucceeded
	default:
		status.Phase = corev1.PodRunning
	}
	setConditions(&status, allReady, now)
	return status, next
}

func baseContainerStatus(pod *corev1.Pod, c corev1.Container) corev1.ContainerStatus {
	return corev1.ContainerStatus{
		Name:        c.Name,
		Image:       c.Image,
		ImageID:     "localcluster://" + c.Image,
		ContainerID: fmt.Sprintf("localcluster://%s-%s", pod.UID, c.Name),
		Started:     ptr(false),
	}
}

func terminatedError(id string, started, finished time.Time) *corev1.ContainerStateTerminated {
	return &corev1.ContainerStateTerminated{
		ExitCode: 1, Reason: "Error", ContainerID: id,
		StartedAt: metav1.NewTime(started), FinishedAt: metav1.NewTime(finished),
	}
}

func ownedByJob(pod *corev1.Pod) bool {
	for _, ref := range pod.OwnerReferences {
		if ref.Kind == "Job" && strings.HasPrefix(ref.APIVersion, "batch/") {
			return true
		}
	}
	return false
}

// setConditions writes the kubelet-owned conditions, keeping their transition
// times when the value does not change, as a real kubelet does.
func setConditions(status *corev1.PodStatus, allReady bool, now time.Time) {
	readyStatus, reason, message := corev1.ConditionTrue, "", ""
	if !allReady {
		readyStatus, reason = corev1.ConditionFalse, "ContainersNotReady"
		var names []string
		for _, cs := range status.ContainerStatuses {
			if !cs.Ready {
				names = append(names, cs.Name)
			}
		}
		message = fmt.Sprintf("containers with unready status: [%s]", strings.Join(names, " "))
		if status.Phase == corev1.PodSucceeded || status.Phase == corev1.PodFailed {
			reason, message = "PodCompleted", ""
		}
	}
	set := func(t corev1.PodConditionType, s corev1.ConditionStatus, reason, message string) {
		for i := range status.Conditions {
			c := &status.Conditions[i]
			if c.Type == t {
				if c.Status != s {
					c.LastTransitionTime = metav1.NewTime(now)
				}
				c.Status, c.Reason, c.Message = s, reason, message
				return
			}
		}
		status.Conditions = append(status.Conditions, corev1.PodCondition{
			Type: t, Status: s, Reason: reason, Message: message, LastTransitionTime: metav1.NewTime(now),
		})
	}
	set(corev1.PodReadyToStartContainers, corev1.ConditionTrue, "", "")
	set(corev1.PodInitialized, corev1.ConditionTrue, "", "")
	set(corev1.ContainersReady, readyStatus, reason, message)
	set(corev1.PodReady, readyStatus, reason, message)
	set(corev1.PodScheduled, corev1.ConditionTrue, "", "")
}

func ptr[T any](v T) *T { return &v }

// statusEqual compares two statuses as the API server would store them.
func statusEqual(a, b corev1.PodStatus) bool {
	return reflect.DeepEqual(roundTrip(a), roundTrip(b))
}

func roundTrip(status corev1.PodStatus) any {
	raw, _ := json.Marshal(status)
	var out any
	_ = json.Unmarshal(raw, &out)
	return out
}
