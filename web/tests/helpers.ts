/** A small hand-made city for tests: a 3 x 3 grid, 100 m blocks, two-way streets 12 m wide. */
import type { City, CityEdge, CityNode, NodeControl } from '../src/sim/city';

export function gridCity(opts: { controls?: Record<string, NodeControl>; oneway?: Record<string, 'forward'> } = {}): City {
  const nodes: CityNode[] = [];
  for (let j = 0; j < 3; j++) {
    for (let i = 0; i < 3; i++) {
      const id = `n${i}${j}`;
      nodes.push({ id, x_m: i * 100, y_m: j * 100, control: opts.controls?.[id] ?? 'none' });
    }
  }
  const edges: CityEdge[] = [];
  const add = (a: string, b: string) => {
    const na = nodes.find((n) => n.id === a)!;
    const nb = nodes.find((n) => n.id === b)!;
    const id = `${a}-${b}`;
    const oneway = opts.oneway?.[id] ?? 'two_way';
    edges.push({ id, from: a, to: b, points: [[na.x_m, na.y_m], [nb.x_m, nb.y_m]], width_m: 12,
      lanes_forward: 1, lanes_backward: oneway === 'forward' ? 0 : 1, oneway, name: id, kind: 'street' });
  };
  for (let j = 0; j < 3; j++) for (let i = 0; i < 2; i++) add(`n${i}${j}`, `n${i + 1}${j}`);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 2; j++) add(`n${i}${j}`, `n${i}${j + 1}`);
  return { format: 'scale-diffusion-city', version: 1, name: 'test-grid', source: { kind: 'generated', seed: 0 }, nodes, edges,
    buildings: [{ id: 'block', footprint: [[20, 20], [80, 20], [80, 80], [20, 80]], height_m: 30, ground_m: 0, kind: 'building' }] };
}
