package runner

import (
	"syscall"
	"time"
)

// rusage is Python's resource.getrusage(RUSAGE_SELF) as `inspect stats`
// reports it (Flower shows it).
func rusage() any {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return "N/A"
	}
	tv := func(t syscall.Timeval) any {
		return pyFloatNumber((time.Duration(t.Sec)*time.Second + time.Duration(t.Usec)*time.Microsecond).Seconds())
	}
	return map[string]any{
		"utime": tv(ru.Utime), "stime": tv(ru.Stime),
		"maxrss": ru.Maxrss, "ixrss": ru.Ixrss, "idrss": ru.Idrss, "isrss": ru.Isrss,
		"minflt": ru.Minflt, "majflt": ru.Majflt, "nswap": ru.Nswap,
		"inblock": ru.Inblock, "oublock": ru.Oublock, "msgsnd": ru.Msgsnd, "msgrcv": ru.Msgrcv,
		"nsignals": ru.Nsignals, "nvcsw": ru.Nvcsw, "nivcsw": ru.Nivcsw,
	}
}
