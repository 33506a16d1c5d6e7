/**
 * The page's ready examples. Plain data, so that scripts/publish-states.ts
 * can make the sample states shipped with the built site from the very same
 * texts (their keys are then the keys the page asks for).
 */
export const EXAMPLES: Record<string, string> = {
  'System prompt':
    'You are a careful assistant for a hardware store. Answer in two sentences, name the aisle, and never guess a price. If a customer asks for something the store does not sell, say so and suggest the closest item it does sell.',
  'Few-shot':
    'Q: capital of France? A: Paris\nQ: capital of Japan? A: Tokyo\nQ: capital of Kenya? A: Nairobi\nQ: capital of Chile? A: Santiago\nQ: capital of Canada? A: Ottawa\nQ: capital of Peru? A:',
  'Long document': Array.from(
    { length: 16 },
    (_, i) =>
      `Section ${i + 1}. The cache keys every state by the SHA-256 of its model and tokens, so a prefix computed once is found again by anyone who asks for it.`,
  ).join('\n'),
};

/** The examples published as sample states with the built site (bases a visitor can reuse at once). */
export const SAMPLE_BASES = ['System prompt', 'Long document'] as const;
