#include <sys/mman.h>
#include "altstack.h"

#define GUARD 4096u
#define SLOT_BYTES (HT_ALT_BYTES + GUARD)

static uint8_t *slots[HT_ALT_SLOTS]; /* each mapped at its first use */
/* busy[i].v: slot i in use. One cache line each: at rate 1 every allocation takes and gives
 * a slot, and two threads doing that on one shared word bounced its line between cores at
 * every sample (a bitmap cost a CAS and an atomic AND on it each time). */
static struct { uint32_t v; } __attribute__((aligned(64))) busy[HT_ALT_SLOTS];
/* The slot this thread took last, tried first: uncontended, its line stays in this core. */
static HT_TLS int home;
static int ready;

HT_HIDDEN int ht_alt_init(void)
{
	st_release(&ready, 1);
	return 0;
}

HT_HIDDEN int ht_alt_ready(void) { return ld_relaxed(&ready); }

/* A slot's stack, with a guard page below it: a sample that overran its stack faults there
 * instead of writing over something else. Two system calls, the first time a slot is used
 * (mapping the whole pool up front cost 65 calls and 64 mappings in every process). */
static uint8_t *map_slot(void)
{
	void *m = mmap(NULL, SLOT_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	if (mprotect((uint8_t *)m + GUARD, HT_ALT_BYTES, PROT_READ | PROT_WRITE) < 0) {
		munmap(m, SLOT_BYTES);
		return NULL;
	}
	return m;
}

static int try_slot(int i)
{
	return !ld_relaxed(&busy[i].v) && !__atomic_exchange_n(&busy[i].v, 1, __ATOMIC_ACQUIRE);
}

/* Slot i is ours alone: mapping it needs no lock. */
static void *took(int i, int *slot)
{
	if (!slots[i] && !(slots[i] = map_slot())) {
		ht_alt_give(i);
		return NULL;
	}
	home = i;
	*slot = i;
	return slots[i] + SLOT_BYTES;  /* the top */
}

HT_HIDDEN void *ht_alt_take(int *slot)
{
	if (!ld_acquire(&ready))
		return NULL;
	/* The thread's last slot, else the lowest free one (a process with little
	 * concurrency maps one or two). One pass: when every slot is in use, no wait. */
	int i = home;
	if (HT_LIKELY(try_slot(i))) {
		if (HT_LIKELY(slots[i] != NULL)) {
			*slot = i;
			return slots[i] + SLOT_BYTES;
		}
		return took(i, slot);
	}
	for (i = 0; i < HT_ALT_SLOTS; i++)
		if (try_slot(i))
			return took(i, slot);
	return NULL;
}

HT_HIDDEN void ht_alt_give(int slot)
{
	st_release(&busy[slot].v, 0);
}

HT_HIDDEN void ht_alt_fork_child(void)
{
	for (int i = 0; i < HT_ALT_SLOTS; i++)
		st_relaxed(&busy[i].v, 0);
}

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
/* rdi = top, rsi = fn, rdx = arg. top is 16-byte aligned, so fn is entered with the
 * stack as the ABI wants it (rsp + 8 aligned). rbp holds the caller's rsp throughout, and
 * the CFI says so: CFA = rbp + 16 from the third instruction on. */
__asm__(
	".text\n"
	".globl ht_call_on_stack\n"
	".hidden ht_call_on_stack\n"
	".type ht_call_on_stack, @function\n"
	"ht_call_on_stack:\n"
	"	.cfi_startproc\n"
	"	pushq %rbp\n"
	"	.cfi_def_cfa_offset 16\n"
	"	.cfi_offset %rbp, -16\n"
	"	movq %rsp, %rbp\n"
	"	.cfi_def_cfa_register %rbp\n"
	"	movq %rdi, %rsp\n"
	"	movq %rdx, %rdi\n"
	"	call *%rsi\n"
	"	movq %rbp, %rsp\n"
	"	popq %rbp\n"
	"	.cfi_def_cfa %rsp, 8\n"
	"	ret\n"
	"	.cfi_endproc\n"
	".size ht_call_on_stack, .-ht_call_on_stack\n");
#else
/* AddressSanitizer keeps its own picture of each thread's stack; off x86-64 there is no
 * switch written yet. Either way: the thread's own stack. */
HT_HIDDEN void ht_call_on_stack(void *top, void (*fn)(void *), void *arg)
{
	(void)top;
	fn(arg);
}
#endif
