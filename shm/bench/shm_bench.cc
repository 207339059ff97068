// placeholder until the benchmark is written
int main(){return 0;}
