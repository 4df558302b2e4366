export async function runDemo(_args: string[]): Promise<number> {
  throw new Error('demo: not built yet in this checkout');
}
